"""The activelab Panel app: model cards, labeling in the latent space, training, evaluation."""
