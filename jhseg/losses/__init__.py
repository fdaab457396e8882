"""Public loss functions, pure and jit-able (optax style): `from jhseg.losses import ...`."""

from jhseg.losses.ultrametric import balanced_edge_cross_entropy
from jhseg.losses.ultrametric import edge_level_log_probabilities
from jhseg.losses.ultrametric import edge_level_probabilities
from jhseg.losses.ultrametric import edge_mask_from_pixel_mask
from jhseg.losses.ultrametric import level_indices
from jhseg.losses.ultrametric import predicted_dissimilarity
from jhseg.losses.hsg import centroid_separation_loss
from jhseg.losses.hsg import collapse_regularization
from jhseg.losses.hsg import grouping_loss
from jhseg.losses.hsg import knn_affinity
from jhseg.losses.hsg import modularity
from jhseg.losses.hsg import pixel_segment_contrastive_loss
from jhseg.losses.hsg import total_loss
from jhseg.losses.del_loss import pair_similarities
from jhseg.losses.del_loss import similarity_loss
from jhseg.losses.hiposeg import hiposeg_losses
from jhseg.losses.hiposeg import init_hierarchical_memory
from jhseg.losses.hiposeg import update_memory
