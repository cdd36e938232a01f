"""One folder denoised through a pipeline, ``medssl denoise --batch`` and ``medssl denoise``
(one series): the same derived SeriesInstanceUIDs, and each run skips the work another
finished (the CLI's batch hashed preset, mode, seed and steps, the pipeline also the format:
the same folder got other UIDs and neither run recognised the other's finished series)."""

from __future__ import annotations

import pydicom
import pytest
import yaml

from medssl.denoise.batch import run_batch
from medssl.io import write_dicom_series
from medssl.pipeline import DenoiseStage
from tests.denoise.phantom import phantom

FAST = ["--steps", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    for i, rel in enumerate(["a/ct", "b/deeper/ct"]):
        vol, _ = phantom((3, 40, 44), seed=i)
        write_dicom_series(vol, root / rel)
    return root


def _series_uids(folder) -> dict[str, str]:
    """Per job folder: the SeriesInstanceUID of its derived series."""
    uids = {}
    for job in sorted(p for p in folder.iterdir() if (p / "job.json").is_file()):
        files = sorted((job / "denoised").glob("*.dcm"))
        uids[job.name] = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    return uids


def test_pipeline_batch_and_single_series_runs_agree(medssl, studies, tmp_path):
    out = tmp_path / "pipeline"
    spec = {
        "output": str(out),
        "stages": {"load": {"input": [str(studies)]}, "denoise": {"steps": 2, "threads": 1}},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    r = medssl("pipeline", "run", tmp_path / "p.yaml")
    assert r.code == 0, r.output
    by_pipeline = _series_uids(out / "denoise")
    assert len(by_pipeline) == 2

    # the CLI's batch on the pipeline's folder: nothing left to do
    r = medssl("denoise", "--batch", studies, "-o", out / "denoise", *FAST)
    assert r.code == 0, r.output
    assert r.stdout.count("already done") == 2, r.stdout

    # the CLI's batch in a new folder: the same UIDs
    cli = tmp_path / "cli"
    r = medssl("denoise", "--batch", studies, "-o", cli, *FAST)
    assert r.code == 0, r.output
    assert _series_uids(cli) == by_pipeline

    # the pipeline's settings on the CLI's folder: nothing left to do either
    seen = []
    settings = DenoiseStage(steps=2, threads=1).settings(None)
    run_batch(studies, cli, settings, progress=lambda state, job, rec: seen.append(state))
    assert seen == ["skip", "skip"]

    # one series through `medssl denoise`: the same series UID as in the batch
    r = medssl("denoise", studies / "a" / "ct", "-o", tmp_path / "single", *FAST)
    assert r.code == 0, r.output
    single = pydicom.dcmread(next((tmp_path / "single").glob("*.dcm")), stop_before_pixels=True)
    assert single.SeriesInstanceUID in by_pipeline.values()
