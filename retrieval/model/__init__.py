"""The descriptor model: pooling (GeM, MAC, SPoC, R-MAC, masked GeM), whitening (Lw, PCA-w),
network (backbone → pooling → L2 → whitening → L2), checkpoint (save/load), concepts (concept-masked
pooling from DFF concepts)."""
