"""The digits MLP template (scikit-learn's 1,797 8x8 digit images, shipped with the package)."""
