"""tunelab: Ray Tune searches and ablation studies of PyTorch U-Nets for medical image
segmentation (see README.md; docs/architecture.md maps the modules)."""
