"""Post-processing: the reference (NumPy) pipeline from class probabilities and masks to detections, and SoftNMS."""
