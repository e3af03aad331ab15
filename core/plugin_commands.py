"""The plugin commands of the ``selfsup`` command line.

    selfsup plugins list [KIND] [PATTERN] [--strict]    components by kind, with package and version
    selfsup plugins show KIND NAME [--strict]           parameters (types, defaults) and docstring
    selfsup plugins check [PACKAGE] [--kind KIND] [--no-distributed]
                                                        the conformance kit, as a pass/fail table
    selfsup new-plugin NAME [--dir DIR]                 a working plugin package skeleton

A broken plugin (import error, hook with a wrong signature, duplicate name) is reported with
its name and the reason and the others still load; ``--strict`` or ``SELFSUP_STRICT_PLUGINS=1``
turns that into an error (exit code 2).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys

from .errors import SelfsupError
from .kinds import KINDS
from .plugin_manager import STRICT_ENV, LoadedPlugins, default_plugins, load_registry

EXIT_CHECK_FAILED = 1
#: Module path in front of a class name inside a type's text.
_QUALIFIER = re.compile(r"(?<![\w'.])(?:[A-Za-z_]\w*\.)+(?=[A-Z]\w*)")



def _plugins(strict: bool) -> LoadedPlugins:
    """The plugins: a fresh strict load when asked, else the process-wide (cached) load."""
    return load_registry(strict=True) if strict else default_plugins()


def warn_plugin_failures(loaded: LoadedPlugins | None = None) -> None:
    """Print one warning per plugin that failed to load (name and reason) to stderr."""
    loaded = loaded if loaded is not None else default_plugins()
    for failure in loaded.failures:
        print(f"warning: {failure} (its components are not loaded; --strict or {STRICT_ENV}=1 "
              "makes this an error)", file=sys.stderr)


def describe_parameters(factory) -> list[str]:
    """``name: type = default`` for each parameter a pipeline can set."""
    from .config import CONTEXT_KEYS, part_kind, parameters_of, type_name

    params, hints = parameters_of(factory)
    lines = []
    for name, p in params.items():
        tp = hints.get(name, p.annotation)
        shown = type_name(tp) if p.annotation is not inspect.Parameter.empty else "any"
        shown = _QUALIFIER.sub("", shown)  # selfsup.interfaces.Critic | None -> Critic | None
        default = "(required)" if p.default is inspect.Parameter.empty else f"= {p.default!r}"
        note = ""
        if name in CONTEXT_KEYS:
            note = "  (filled from the data)"
        elif (kind := part_kind(tp)) is not None:
            note = f"  (a registered {kind}: {{name: ..., parameters}})"
        lines.append(f"{name}: {shown} {default}{note}")
    return lines


def cmd_list(args: argparse.Namespace) -> int:
    loaded = _plugins(args.strict)
    entries = loaded.registry.list(args.kind, args.pattern or "*")
    width = max((len(e.name) for e in entries), default=4)
    kind = None
    for e in entries:
        if e.kind != kind:
            kind = e.kind
            print(f"\n{kind}:")
        print(f"  {e.name:<{width}}  {e.summary}  [{e.provider}]")
    if not entries:
        print(f"no {args.kind or 'component'}s match {args.pattern or '*'!r}")
    warn_plugin_failures(loaded)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    loaded = _plugins(args.strict)
    entry = loaded.registry.get(args.kind, args.name)
    print(f"{entry.kind} {entry.name}: {entry.summary}")
    print(f"  provided by {entry.provider} ({entry.target})")
    kind = KINDS.get(entry.kind)
    traits = [f"{t}={getattr(entry.factory, t)}" for t in (kind.traits if kind else ()) if hasattr(entry.factory, t)]
    if traits:
        print(f"  {', '.join(traits)}")
    print("\nparameters:")
    for line in describe_parameters(entry.factory) or ["(none)"]:
        print(f"  {line}")
    doc = inspect.getdoc(entry.factory) or ""
    details = doc.split("\n", 1)[1].strip() if "\n" in doc else ""
    if details:
        print(f"\n{details}")
    warn_plugin_failures(loaded)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from .testing import (
        CHECKED_KINDS, ConformanceResult, format_results, normalize_package, run_conformance,
        run_distributed_conformance,
    )

    loaded = _plugins(args.strict)
    wanted = None if args.package is None else normalize_package(args.package)
    failures = [f for f in loaded.failures if wanted is None or normalize_package(f.provider.package) == wanted]
    results = [ConformanceResult("plugin", f.plugin, str(f.provider), "fail", f"could not load: {f.reason}")
               for f in failures]
    kinds = [args.kind] if args.kind else list(CHECKED_KINDS)
    results += run_conformance(loaded.registry, package=args.package, kinds=kinds)
    if not args.no_distributed:  # objectives that pass in one process: the same step on 2 processes
        passed = [r.name for r in results if r.kind == "objective" and r.status == "pass"]
        results += run_distributed_conformance(loaded.registry, passed)
    unchecked = Counter(e.kind for e in loaded.registry.list() if e.kind not in kinds and not args.kind
                        and (wanted is None or normalize_package(e.provider.package) == wanted))
    if not results and not unchecked:
        packages = sorted({e.provider.package for e in loaded.registry.list()})
        raise SelfsupError(f"no components from a package named {args.package!r}"
                           f"{' of kind ' + repr(args.kind) if args.kind else ''}; installed: {', '.join(packages)}.")
    if results:
        print(format_results(results))
    if unchecked:
        print("not checked (kinds without a conformance check): "
              + ", ".join(f"{count} {kind}" for kind, count in unchecked.items()))
    return EXIT_CHECK_FAILED if any(r.status == "fail" for r in results) else 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from .scaffold import plugin_names, write_plugin_skeleton

    root = write_plugin_skeleton(args.name, args.dir)
    _, module, component = plugin_names(args.name)
    print(f"wrote {root}/ (the package {module}, registering the critic {component!r})")
    print(f"next: pip install -e {root} && selfsup plugins check {args.name} && pytest {root}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``plugins`` (list, show, check) and ``new-plugin`` to the top-level subcommands."""
    strict = argparse.ArgumentParser(add_help=False)
    strict.add_argument("--strict", action="store_true",
                        help=f"a broken plugin is an error, not a warning (also: {STRICT_ENV}=1)")

    plugins = sub.add_parser("plugins", help="list, describe or check registered components",
                             description="Registered components and the packages that provide them.")
    actions = plugins.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", parents=[strict], help="components by kind, with providing package and version",
                            description="List components (of one KIND, names matching PATTERN with * wildcards).")
    ls.add_argument("kind", nargs="?", metavar="KIND")
    ls.add_argument("pattern", nargs="?", metavar="PATTERN")
    ls.set_defaults(func=cmd_list)
    show = actions.add_parser("show", parents=[strict], help="a component's parameters and docstring",
                              description="Parameters with types and defaults, and the docstring of KIND NAME.")
    show.add_argument("kind", metavar="KIND")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(func=cmd_show)
    check = actions.add_parser("check", parents=[strict], help="run the conformance kit on installed components",
                               description="Run selfsup.testing's conformance checks on every registered component "
                               "(or PACKAGE's) and print a pass/fail table; exit code 1 when one fails. Every "
                               "objective that passes also gets a row 'distributed: ...': one training step on 2 "
                               "CPU processes (gloo, each with half the batch, gradients averaged as DDP does) must "
                               "give the loss and gradients of 1 process on the whole batch (batch statistics and "
                               "negatives over the global batch).")
    check.add_argument("package", nargs="?", metavar="PACKAGE", help="only this distribution's components")
    check.add_argument("--kind", metavar="KIND", help="only components of this kind")
    check.add_argument("--no-distributed", action="store_true",
                       help="skip the distributed check of objectives (it starts 2 worker processes once, "
                       "a few seconds plus one step per objective)")
    check.set_defaults(func=cmd_check)

    new = sub.add_parser("new-plugin", help="write a plugin package skeleton",
                         description="Write DIR/NAME/: pyproject.toml with the selfsup.plugins entry point, a module "
                         "registering an example critic, and tests using selfsup.testing.")
    new.add_argument("name", metavar="NAME", help="distribution name, e.g. selfsup-my-critic")
    new.add_argument("--dir", default=".", metavar="DIR", help="parent folder (default: the current one)")
    new.set_defaults(func=cmd_new_plugin)
