"""Multi-task Transformer ranker: model, losses, batches, training, export, predictor."""
