"""Fine-tuning: pairs (labels, CSV, SfM-120k, clusters), mining (hard negatives re-mined each epoch),
loss (contrastive, triplet), engine (the one training loop: run folder, seeding, epochs, validated
best, checkpoints, resume, final whitening), supervised and unsupervised (the two drivers), cluster
(agglomerative clustering for training with no labels), runs (what tools/train_gem.py calls)."""
