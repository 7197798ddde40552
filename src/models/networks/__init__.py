from src.models.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from src.models.networks.mlp import MaxoutDiscriminator, MLPDiscriminator, MLPGenerator

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator", "MaxoutDiscriminator"]
