"""``regkit data``: convert, validate and fetch datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli._config import config_option, options_as_overrides

app = typer.Typer(help="Convert, validate and fetch datasets.", no_args_is_help=True)
console = Console()


def _print_counts(title: str, counts: dict) -> None:
    console.print(title, soft_wrap=True)  # paths must not be wrapped mid-name
    table = Table()
    table.add_column("field")
    table.add_column("value", justify="right")
    for key, value in counts.items():
        table.add_row(str(key), f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


@app.command()
def movielens(
    config: Path = config_option(),
    raw: Path = typer.Option(..., "--raw", help="Folder with the ML-100K raw files (u.data, u.item, u.user, ...)."),
    out: Path = typer.Option(..., "--out", help="Output folder for the parquet tables."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """MovieLens-100K raw files → interactions/items/users parquet plus the canonical split files."""
    from pipelines.datasets.movielens import convert_movielens_100k

    manifest = convert_movielens_100k(raw, out, overwrite=overwrite)
    counts = {k: manifest[k] for k in ("interactions", "users", "items", "genres")}
    counts.update({f"split {name}": rows for name, rows in manifest["splits"].items()})
    _print_counts(f"MovieLens-100K → {out}", counts)


@app.command()
def lastfm(
    config: Path = config_option(),
    raw: Path = typer.Option(..., "--raw", help="Folder with the LightGCN LastFM files (data1.txt, test1.txt)."),
    out: Path = typer.Option(..., "--out", help="Output folder for the parquet split files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """LastFM (the LightGCN reference split) → splits/train.parquet and splits/test.parquet."""
    from pipelines.datasets.lastfm import convert_lastfm

    manifest = convert_lastfm(raw, out, overwrite=overwrite)
    counts = {"users": manifest["users"], "items": manifest["items"]}
    counts.update({f"split {name}": rows for name, rows in manifest["splits"].items()})
    _print_counts(f"LastFM → {out}", counts)


@app.command()
def validate(file: Path = typer.Argument(..., help="A parquet interaction log.")) -> None:
    """Check an interaction log against the schema and print a summary."""
    from recsys.data import validate_log

    summary = validate_log(file)
    counts = {
        "rows": summary.rows,
        "users": summary.users,
        "items": summary.items,
        "time range": f"{summary.time_min} … {summary.time_max}" if summary.time_min is not None else "no timestamp",
        "duplicate rows": summary.duplicate_rows,
        **{f"nulls in {column}": count for column, count in summary.nulls.items()},
    }
    _print_counts(f"{file}: valid interaction log", counts)


@app.command()
def split(
    config: Path = typer.Option(None, "--config", help="recsys run config (the file `regkit recsys train` takes)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a run-config value: data.key=value (repeatable)."),
    log: Path = typer.Option(None, "--log", help="The interaction log to split (sets data.log)."),
    method: str = typer.Option(
        None, "--split", help="random_holdout, leave_last_out or temporal (sets data.split; default: the config's)."
    ),
    test_fraction: float = typer.Option(None, "--test-fraction", help="random_holdout / temporal: share held out."),
    leave_last: int = typer.Option(
        None, "--leave-last", help="leave_last_out: latest interactions held out per user."
    ),
    split_seed: int = typer.Option(None, "--split-seed", help="random_holdout: seed of the held-out draw."),
    out: Path = typer.Option(..., "--out", help="Output folder (train, test, fit, valid parquet; qrels; split.json)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Write the split `regkit recsys train` trains on (same options, same code) as parquet files and TREC qrels.

    Files: train.parquet and test.parquet; fit.parquet and valid.parquet, the validation carve of train that early
    stopping uses (data.validation); test_qrels.trec; split.json with the fingerprint that `recsys train` records in
    metrics.json. Ids in the qrels are u:<user_id> and i:<item_id>, as in a run's test_run.trec.
    """
    from pipelines.recsys_run import load_split
    from pipelines.recsys_split import TEST_QRELS, write_split
    from pipelines.run_config import load_recsys_config

    shorthands = {"log": None if log is None else str(log), "split": method, "test_fraction": test_fraction,
                  "leave_last": leave_last, "split_seed": split_seed}
    sets = options_as_overrides("data", **shorthands)
    resolved = load_recsys_config(config, [*overrides, *sets])
    logs = load_split(resolved)
    summary = write_split(logs, out, data=resolved.to_dict()["data"], overwrite=overwrite)
    counts = {f"{side}.parquet rows": rows for side, rows in summary["rows"].items()}
    _print_counts(f"{logs.name} → {out}", {**counts, "fingerprint": summary["fingerprint"]["sha256"][:16]})
    console.print(f"compare runs on it: regkit ab compare A/test_run.trec B/test_run.trec --qrels {out / TEST_QRELS}",
                  soft_wrap=True)


@app.command()
def beir(
    config: Path = config_option(),
    name: str = typer.Option(None, "--name", help="BEIR dataset name (e.g. scifact); defaults to the folder name."),
    source: Path = typer.Option(None, "--from", help="Load from this local BEIR folder instead of downloading."),
    out: Path = typer.Option(None, "--out", help="Cache folder for downloads (default: ~/.cache/regkit/beir)."),
    split: str = typer.Option("test", "--split", help="qrels split to validate."),
) -> None:
    """Load (or download) a BEIR dataset, validate corpus/queries/qrels and print counts."""
    from retrieval.beir import download_beir, load_beir

    if source is None and name is None:
        raise typer.BadParameter("give --name to download, or --from DIR for a local folder.")
    folder = source if source is not None else download_beir(name, out)
    dataset = load_beir(folder, split=split)
    _print_counts(f"BEIR {name or dataset.name} ({folder})", dataset.summary())


@app.command("demo")
def demo_data(
    config: Path = config_option(),
    out: Path = typer.Option(Path("data/demo"), "--out", help="Output folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Generate the bundled demo data (deterministic)."""
    from pipelines.datasets.demo import write_demo_data

    write_demo_data(out, overwrite=overwrite)
    console.print(f"demo data written to {out}")
