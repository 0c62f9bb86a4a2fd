"""Entry point kept for ``python -m shared_apt.bench`` (README, scripts): the model benchmark
(:mod:`shared_apt.harness.bench`), or with ``--loader`` the data-loading benchmark
(:mod:`shared_apt.harness.bench_loader`)."""
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--loader" in argv:
        from shared_apt.harness.bench_loader import main as loader_main

        return loader_main(argv)
    from shared_apt.harness.bench import main as bench_main

    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
