"""Data: label spaces, dataset readers, `duda prepare`, transforms, rare-class sampling, loaders.

Modules: ``labels`` (class lists and id tables), ``datasets`` (one reader per published layout),
``prepare`` (trainId conversion and class statistics), ``transforms`` (resize, crop, flip,
normalise), ``rcs`` (rare-class sampling), ``loader`` (training/evaluation sets and loaders),
``synth`` (the procedural benchmark). Import them directly; this package imports nothing heavy.
"""
