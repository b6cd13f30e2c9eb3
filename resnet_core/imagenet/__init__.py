"""ImageNet, streamed from its JPEG files through the same ``fit`` as the in-memory data sets.

Modules, in the order a batch meets them: ``folders`` (find the tree, list files and labels, the preflight),
``decode`` (one file to RGB, dirty files included), ``transforms`` (the paper's and torchvision's recipes:
per-image crops in workers, batched steps on the device), ``stream`` (``ImageNetSource``: resumable order,
DataLoader, centre-crop and 10-crop evaluation). ``sample`` writes a small learnable ImageNet-layout set.
"""
