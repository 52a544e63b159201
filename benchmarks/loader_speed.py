"""Training-loader throughput on full-size frames (see ``duda.deploy.loader_speed``).

Usage: ``python benchmarks/loader_speed.py [--workers 0 1 2]``; ``duda bench`` runs the loader
part of it too.
"""

from duda.deploy.loader_speed import main

if __name__ == "__main__":
    main()
