"""ImageNet, streamed from its JPEG files through the same ``fit`` as the in-memory data sets.

Modules, in the order a batch meets them: ``folders`` (find the tree, list files and labels, the preflight),
``decode`` (one file to RGB, dirty files included), ``transforms`` (the paper's and torchvision's recipes:
per-image crops in workers, batched steps on the device), ``stream`` (``ImageNetSource``: resumable order,
DataLoader, centre-crop and 10-crop evaluation). ``device_decode`` is the opt-in path (``run.decode=device``)
on which the workers only read the files and the training process decodes the batch on the device (nvJPEG on
a GPU). ``sample`` writes a small learnable ImageNet-layout set.
"""
