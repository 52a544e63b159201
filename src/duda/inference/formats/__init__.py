"""Other projects' model formats, read (and written) beside the loaders: Hugging Face SegFormer
folders (:mod:`~duda.inference.formats.hf`) and published mmseg checkpoints
(:mod:`~duda.inference.formats.mmseg`)."""
