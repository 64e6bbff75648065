"""`python -m rdfer.predict`: the command line of rdfer.prediction (see its docstring).

Only the `-m` entry point: the code lives in rdfer.prediction, so that `rdfer.predict` stays the function
(importing a submodule named rdfer.predict would bind that name to the module)."""

import sys

from rdfer.prediction import main

if __name__ == "__main__":
    sys.exit(main())
