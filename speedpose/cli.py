"""The `speedpose` command line: a thin Typer layer over the stages in ``pipelines/``.

Nothing imports this module.  Every :class:`~speedpose.errors.SpeedposeError` becomes a one-line message on
stderr and exit code 2; ``speedpose --debug COMMAND`` shows the traceback instead.  Stage modules are imported
inside the commands so that ``speedpose --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from speedpose import __version__
from speedpose.errors import SpeedposeError

app = typer.Typer(
    name="speedpose",
    help="Monocular spacecraft pose estimation on SPEED+ with Image2Sphere.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: what the root options asked for, set while parsing (before any command runs) and read by :func:`main`
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"speedpose {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Monocular spacecraft pose estimation on SPEED+ with Image2Sphere."""
    _state["debug"] = debug


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Output folder: new, empty, or an interrupted run to resume."),
    train: int = typer.Option(60, "--train", help="Synthetic training images."),
    val: int = typer.Option(20, "--val", help="Synthetic validation images."),
    lightbox: int = typer.Option(20, "--lightbox", help="Lightbox-style test images."),
    sunlamp: int = typer.Option(20, "--sunlamp", help="Sunlamp-style test images."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed (same seed and options: the same bytes)."),
    poses_train: Optional[Path] = typer.Option(None, "--poses-train", help="Render train at these labels."),
    poses_val: Optional[Path] = typer.Option(None, "--poses-val", help="Render validation at these labels."),
    poses_lightbox: Optional[Path] = typer.Option(None, "--poses-lightbox", help="Render lightbox at these labels."),
    poses_sunlamp: Optional[Path] = typer.Option(None, "--poses-sunlamp", help="Render sunlamp at these labels."),
    workers: int = typer.Option(0, "--workers", help="Processes (0 = all cores)."),
    crops: int = typer.Option(0, "--crops", help="Also render this many training crops for the crop network "
                              "(a crop set in OUT/synthetic/crops-<S>px; data.crop_set of the config)."),
    crop_size: int = typer.Option(96, "--crop-size", help="Side S of the crops [px] (the config's data.crop_size)."),
    crop_margin: float = typer.Option(1.3, "--crop-margin", help="Framing margin (the config's data.crop_margin)."),
) -> None:
    """Render a small SPEED+-format stand-in dataset (images, masks, labels, camera.json) [and a crop set]."""
    from pipelines import synth as stage

    poses = {k: v for k, v in (("train", poses_train), ("validation", poses_val), ("lightbox", poses_lightbox),
                               ("sunlamp", poses_sunlamp)) if v is not None}
    summary = stage.run(out, train, val, lightbox, sunlamp, seed=seed, workers=workers, poses=poses or None)
    typer.echo(stage.format_summary(summary))
    if crops:
        from pipelines import synth_crops

        params = synth_crops.CropSetParams(crops, crop_size, crop_margin, seed=seed)
        s = synth_crops.run(synth_crops.default_crop_dir(out, crop_size), params, workers=workers)
        typer.echo(synth_crops.format_summary(s))


@app.command()
def preprocess(
    root: Path = typer.Option(..., "--root", help="SPEED+ root (camera.json, synthetic/, lightbox/, sunlamp/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: a folder per root under "
                                       "$SPEEDPOSE_CACHE or ~/.cache/speedpose/preprocessed)."),
    domains: Optional[str] = typer.Option(None, "--domains", help="Comma-separated subset of synthetic,lightbox,"
                                          "sunlamp (default: every domain with a label file)."),
    size: str = typer.Option("768x512", "--size", help="WIDTHxHEIGHT of the stored images."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: CPU cores)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave bad records out (listed in rejects.csv) "
                                  "instead of stopping at the first one."),
    force: bool = typer.Option(False, "--force", help="Recompute everything, even what is up to date."),
) -> None:
    """Validate a SPEED+ root and write per split an index table, resized images and a manifest (cached)."""
    from pipelines import preprocess as stage

    summaries = stage.run(root, out=out, domains=stage.parse_domains(domains), size=stage.parse_size(size),
                          workers=workers, skip_bad=skip_bad, force=force)
    typer.echo(stage.format_summary(summaries))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def augment(
    ctx: typer.Context,
    root: Optional[Path] = typer.Option(None, "--root", help="SPEED+ root (preprocessed)."),
    config: Optional[str] = typer.Option(None, "--config", help="Experiment YAML or shipped config name "
                                         "(default standin_cpu)."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Write a grid of augmented crops with the "
                                           "transformed keypoints drawn to this PNG."),
    materialise: Optional[Path] = typer.Option(None, "--materialise", help="Write augmented crops and their labels "
                                               "into this folder (offline use)."),
    n: int = typer.Option(16, "--n", help="Crops in the preview."),
    copies: int = typer.Option(1, "--copies", help="Augmented copies per image with --materialise."),
    seed: int = typer.Option(0, "--seed", help="Seed of the augmentation draws."),
) -> None:
    """Preview or materialise the training augmentation. Extra arguments are dotted config overrides."""
    from pipelines import augment as stage

    for path in stage.run(root, config, ctx.args, preview_png=preview, materialise_dir=materialise, n=n,
                           copies=copies, seed=seed):
        typer.echo(f"wrote {path}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    root: Optional[Path] = typer.Option(None, "--root", help="SPEED+ root (preprocessed with `speedpose preprocess`)."),
    config: Optional[str] = typer.Option(None, "--config", help="Experiment YAML, or a shipped config name "
                                         "(smoke, standin_cpu, speedplus, speedplus_fullimage)."),
    split: Optional[float] = typer.Option(None, "--split", help="Fraction of synthetic/train used for training "
                                          "(seeded subset; 1.0 = all)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Number of epochs."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda | auto."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder of the run folders."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the config's name)."),
    resume: bool = typer.Option(False, "--resume", help="Continue <out>/<name> exactly where it stopped."),
    max_time: Optional[float] = typer.Option(None, "--max-time", help="Stop (with a checkpoint) after this many "
                                             "minutes: a budget for fair comparisons."),
    dataset: str = typer.Option("speedplus", "--dataset", help="speedplus (more adapters register their own)."),
) -> None:
    """Train a pose model. Extra arguments are dotted config overrides, e.g. train.batch_size=32 optim.lr=1e-4."""
    from pipelines import train as stage

    summary = stage.run(root, config, ctx.args, dataset=dataset, split=split, epochs=epochs, device=device,
                        out=out, name=name, resume=resume, max_time_min=max_time)
    typer.echo(f"{summary.stopped}: {summary.global_step} steps, {summary.epochs_completed} epochs, best "
               f"{summary.best_metric} = {summary.best_value} -> {summary.run_dir}")


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", help="Run folder written by `speedpose train`."),
    root: Path = typer.Option(..., "--root", help="SPEED+ root (preprocessed on demand when needed), or the "
                              "benchmark's data folder with --dataset."),
    domain: Optional[str] = typer.Option(None, "--domain", help="synthetic, lightbox or sunlamp (SPEED+ only)."),
    split: Optional[str] = typer.Option(None, "--split", help="synthetic: validation (default) or train; "
                                        "benchmarks: test (default) or train."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="best, last or a checkpoint FILE (default: "
                                             "best for SPEED+, last for the benchmarks, as the papers report)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default <run>/eval/<domain>-<split>-"
                                       "<checkpoint>)."),
    prep: Optional[Path] = typer.Option(None, "--prep", help="Preprocessed folder (default: the root's cache)."),
    device: str = typer.Option("auto", "--device", help="cpu | cuda | auto."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per batch (default: training's)."),
    dataset: str = typer.Option("speedplus", "--dataset", help="speedplus, modelnet10 or pascal3d (benchmarks: "
                                "Acc@15/30 and median error per class, metrics.json and per_image.csv)."),
) -> None:
    """Score a run on one labelled domain; write report.json, per_image.csv, predictions.json, figures, report.html."""
    if dataset != "speedplus":
        from pipelines import evaluate_benchmark as bench

        typer.echo(bench.format_report(bench.run(run, dataset, root, split=split or "test",
                                                 checkpoint=checkpoint or "last", out=out, device=device,
                                                 batch_size=batch_size)))
        return
    from pipelines import evaluate as stage

    if domain is None:
        raise typer.BadParameter("--domain is required for SPEED+ (synthetic, lightbox or sunlamp)")
    report = stage.run(run, root, domain, split=split, checkpoint=checkpoint or "best", out=out, prep_dir=prep,
                       device=device, batch_size=batch_size)
    typer.echo(stage.format_report(report))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def adapt(
    ctx: typer.Context,
    run: Path = typer.Option(..., "--run", help="Run folder written by `speedpose train`."),
    root: Path = typer.Option(..., "--root", help="SPEED+ root (preprocessed on demand)."),
    domain: str = typer.Option(..., "--domain", help="Target domain: lightbox or sunlamp (its labels are never "
                               "used)."),
    method: str = typer.Option(..., "--method", help="refine (BatchNorm layers, entropy minimisation) or "
                               "self-train (pseudo-labels, fine-tuning rounds)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The adapted run folder (default <run>-adapt-<domain>-"
                                       "<method>); re-running the command resumes it."),
    config: Optional[str] = typer.Option(None, "--config", help="Adaptation settings (default configs/adapt.yaml)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (train.seed)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda | auto (train.device)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Source checkpoint: best, last or a FILE."),
    prep: Optional[Path] = typer.Option(None, "--prep", help="Preprocessed folder (default: the root's cache)."),
) -> None:
    """Adapt a run to unlabelled lightbox/sunlamp images into a new run folder. Extra arguments are dotted
    overrides of the adaptation settings, e.g. refine.steps=50 self_train.rounds=3."""
    from pipelines import adapt as stage

    record = stage.run(run, root, domain, method, out=out, config=config, overrides=ctx.args, seed=seed,
                       device=device, checkpoint=checkpoint, prep_dir=prep)
    typer.echo(stage.format_summary(record))


@app.command()
def submit(
    run: Path = typer.Option(..., "--run", help="Run folder written by `speedpose train`."),
    root: Path = typer.Option(..., "--root", help="SPEED+ root with lightbox/test.json and sunlamp/test.json."),
    out: Path = typer.Option(Path("submission.csv"), "--out", help="The SPEC2021 CSV to write."),
    json_out: bool = typer.Option(False, "--json", help="Also write <stem>_lightbox.json and <stem>_sunlamp.json."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last or a checkpoint FILE."),
    prep: Optional[Path] = typer.Option(None, "--prep", help="Preprocessed folder (default: the root's cache)."),
    device: str = typer.Option("auto", "--device", help="cpu | cuda | auto."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Write the lines of the images that could "
                                       "be predicted when some could not (they are listed)."),
) -> None:
    """Predict every lightbox and sunlamp test image and write the SPEC2021 submission CSV (validated first)."""
    from pipelines import submit as stage

    summary = stage.run(run, root, out, write_json=json_out, checkpoint=checkpoint, prep_dir=prep, device=device,
                        allow_partial=allow_partial)
    typer.echo(stage.format_summary(summary))


@app.command()
def predict(
    images: list[Path] = typer.Argument(..., help="Image files or folders (SPEED+ frames, 1920x1200)."),
    run: Path = typer.Option(..., "--run", help="Run folder written by `speedpose train`."),
    camera: Optional[Path] = typer.Option(None, "--camera", help="camera.json of the images (default: SPEED+'s)."),
    out: Path = typer.Option(Path("predictions"), "--out", help="Folder of the overlays and distribution plots."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last or a checkpoint FILE."),
    device: str = typer.Option("auto", "--device", help="cpu | cuda | auto."),
) -> None:
    """Pose, confidence, overlay PNG and SO(3) distribution plot per image; one JSON line per image on stdout."""
    import json

    from pipelines import predict as stage

    for rec in stage.run(images, run, camera=camera, out=out, checkpoint=checkpoint, device=device,
                         progress=False):
        typer.echo(json.dumps(rec))


@app.command()
def score(
    predictions: Path = typer.Argument(..., help="SPEC2021 submission CSV, or one domain's predictions as JSON."),
    root: Path = typer.Option(..., "--root", help="SPEED+ root with <domain>/test.json (and synthetic/*.json)."),
    domain: Optional[str] = typer.Option(None, "--domain", help="Score only this domain: lightbox, sunlamp or "
                                         "synthetic (required for a JSON file)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
    thresholds: Optional[bool] = typer.Option(None, "--thresholds/--no-thresholds",
                                              help="Force the SPEC2021 thresholds on or off (default: on for "
                                                   "lightbox/sunlamp, off for synthetic)."),
) -> None:
    """Score predictions with the SPEC2021 score (per domain, and the lightbox/sunlamp mean)."""
    from pipelines import score as stage

    scores = stage.run(predictions, root, domain=domain, json_out=json_out, thresholds=thresholds)
    typer.echo(stage.format_score_table(scores))


@app.command()
def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder of everything the demo makes (reused on re-runs)."),
    minutes: float = typer.Option(15.0, "--minutes", help="Total time budget [min], rendering included."),
    adapt: bool = typer.Option(False, "--adapt", help="Then adapt the run to the lightbox and sunlamp images "
                               "(labels unused) and evaluate the adapted runs: a few more minutes, outside the "
                               "budget."),
    adapt_method: str = typer.Option("refine", "--adapt-method", help="With --adapt: refine (BatchNorm layers, "
                                     "entropy minimisation) or self-train (pseudo-labels, fine-tuning rounds)."),
) -> None:
    """Render a small stand-in, preprocess, train within the budget, evaluate, submit, print the scores."""
    from pipelines import demo as stage

    typer.echo(stage.format_summary(stage.run(out, minutes, adapt=adapt, adapt_method=adapt_method)))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = False  # main() may run more than once in a process (tests)
    try:
        # standalone mode: Typer itself reports usage errors (exit 2) and --help/--version (exit 0)
        app(args=argv, prog_name="speedpose", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except SpeedposeError as exc:
        if _state["debug"]:  # `speedpose --debug COMMAND`, as parsed by the root callback
            raise
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def console_main() -> None:  # pragma: no cover - thin wrapper for the console script
    sys.exit(main())
