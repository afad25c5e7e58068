"""`sluice schemas check|list`: the evolution rule, and what is in `schemas/`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from pipelines.cli.common import console, fail_line, json_option, print_json

schemas_dir_option = click.option(
    "--schemas-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    envvar="SLUICE_SCHEMAS_DIR",
    show_envvar=True,
    default=None,
    help="Directory of <Name>.v<N>.avsc files.  [default: the checkout's schemas/]",
)


@click.group()
def schemas() -> None:
    """Avro schemas: every version kept, each FULL compatible with the one before.

    \b
    Examples:
      sluice schemas check                after adding schemas/<Name>.v<N+1>.avsc
      sluice schemas list --json          versions and single-object fingerprints
    """


@schemas.command()
@schemas_dir_option
def check(schemas_dir: Path | None) -> None:
    """Check that each version is FULL (backward and forward) compatible with the previous.

    Exits 1 naming the schema, versions, direction and field at fault.
    """
    from pipelines.compat import check_store
    from pipelines.schemas import SchemaStore

    store = SchemaStore.load(schemas_dir)
    results = check_store(store)
    failed = 0
    for result in results:
        if result.problems:
            failed += 1
            for problem in result.problems:
                fail_line(str(problem))
        else:
            console.print(f"ok  {result.name} v{result.older} -> v{result.newer} (FULL)")
    single = [n for n in store.names() if len(store.versions(n)) == 1]
    console.print(
        f"{len(results)} evolution step(s) checked, {failed} incompatible; "
        f"{len(single)} schema(s) have one version"
    )
    if failed:
        raise click.exceptions.Exit(1)


@schemas.command(name="list")
@schemas_dir_option
@json_option
def list_(schemas_dir: Path | None, as_json: bool) -> None:
    """Every schema version with its single-object fingerprint."""
    from pipelines.schemas import SchemaStore

    store = SchemaStore.load(schemas_dir)
    rows = [
        {
            "name": v.name,
            "version": v.version,
            "fingerprint": v.fingerprint.hex(),
            "file": v.path.name,
        }
        for n in store.names()
        for v in store.versions(n)
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("schema", "version", "fingerprint (CRC-64-AVRO, LE)", "file")
    for row in rows:
        table.add_row(
            str(row["name"]), str(row["version"]), str(row["fingerprint"]), str(row["file"])
        )
    console.print(table)
