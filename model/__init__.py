"""AMA (Adversarial Mirrored AutoEncoder) model: networks, training, scoring and bundles.

Public API: :class:`AMADetector`, :class:`AMAConfig`, :class:`BundleError`,
:func:`train_tiny_bundle` (test helper).
"""

from model.bundle import BundleError
from model.detector import AMADetector
from model.networks import AMAConfig
from model.testing import train_tiny_bundle

__all__ = ["AMAConfig", "AMADetector", "BundleError", "train_tiny_bundle"]
