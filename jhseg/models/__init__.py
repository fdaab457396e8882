"""flax.nnx networks: ResNet encoders, the ultrametric U-Net, and the torchvision weight import."""
