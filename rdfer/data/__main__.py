"""python -m rdfer.data {summary,synth,crop} ...: inspect a dataset, generate the SynthDFER benchmark, or turn
raw videos into face-crop frame folders."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from rdfer import cli

    return cli.run(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rdfer.data", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also RDFER_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    from rdfer.data import crop, summary, synth

    summary.add_arguments(sub.add_parser("summary", help="clips per split and per class, as JSON"))
    synth.add_arguments(sub.add_parser("synth", help="generate the SynthDFER benchmark"))
    crop.add_arguments(
        sub.add_parser("crop", help="raw videos -> square face-crop frame folders (DFEW layout)")
    )
    args = parser.parse_args(argv)
    return {"summary": summary.run, "synth": synth.run, "crop": crop.run}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
