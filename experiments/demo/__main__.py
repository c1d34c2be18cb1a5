import argparse

from jaxinterp import compilation_cache

from .run import main

parser = argparse.ArgumentParser(prog="python -m experiments.demo", description=main.__doc__)
parser.add_argument("text", nargs="?", default=None, metavar="TEXT", help="the sentence (a built-in one if left out)")
parser.add_argument("--html", default=None, metavar="PATH", help="where to write the HTML report")
arguments = parser.parse_args()
compilation_cache.enable()
main(arguments.text, arguments.html)
