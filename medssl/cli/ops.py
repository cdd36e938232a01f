"""`medssl ops ...`: the compiled kernels: status and CUDA build."""

from __future__ import annotations

import typer
from rich.table import Table

from medssl.cli._console import out
from medssl.errors import MedsslError

__all__ = ["ops_app"]

ops_app = typer.Typer(help="Compiled kernels: show their status, build the CUDA kernel.")


@ops_app.command("info")
def info_cmd() -> None:
    """Show which kernels (bilateral filter, NLM stage) are loaded and what each device uses."""
    import torch

    from medssl.ops.bilateral import backend, dispatch_table, loader
    from medssl.ops.bilateral.toolchain import find_cuda_home

    st = loader.status()
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("torch", f"{torch.__version__} (CUDA {torch.version.cuda})")
    table.add_row("backend", f"{backend()} (MEDSSL_BILATERAL_BACKEND)")
    table.add_row("CPU kernel", st.cpu_source if st.cpu else f"not loaded: {st.cpu_problem}")
    table.add_row(
        "CUDA kernel",
        (st.cuda_source or "") + (" (checked)" if st.cuda_validated else "")
        if st.cuda
        else f"not loaded: {st.cuda_problem}",
    )
    for device, mode in dispatch_table().items():
        table.add_row(f"{device} tensors use", "compiled kernel" if mode == "op" else mode)
    from medssl.denoise.filter2noise.nlm import kernel_available

    nlm = "compiled kernel (CPU)" if kernel_available() else "torch loops (no compiled kernel)"
    table.add_row("NLM stage uses", nlm + "; torch loops on GPUs")
    home = find_cuda_home()
    table.add_row("CUDA toolkit", str(home) if home else "not found (needed only to build)")
    table.add_row("CUDA kernel cache", str(loader.kernel_cache_dir("cuda")))
    out.print(table)


@ops_app.command("build")
def build_cmd(
    arch: str | None = typer.Option(
        None, "--arch", help="TORCH_CUDA_ARCH_LIST, e.g. '8.0;9.0' (default: 7.5 to 9.0+PTX)."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Show the compiler output."),
) -> None:
    """Compile the CUDA kernel with nvcc into the kernel cache (no GPU needed to build)."""
    from medssl.ops.bilateral import loader, set_backend

    try:
        path = loader.build_cuda(arch_list=arch, verbose=verbose)
    except loader.KernelBuildError as exc:
        hint = "install the CUDA toolkit (nvcc) or set CUDA_HOME to it"
        raise MedsslError(str(exc), hint=hint) from None
    out.print(f"built {path}")
    import torch

    if torch.cuda.is_available():
        st = loader.status()
        st.cuda_problem = None
        loader.load_cuda_kernel()
        set_backend(None)
        st = loader.status()
        verdict = "checked against the reference" if st.cuda_validated else st.cuda_problem
        out.print(f"loaded on {torch.cuda.get_device_name()}: {verdict}")
    else:
        out.print("no GPU here: the kernel loads where a GPU is present")
