"""Data: annotation and feature readers, the time↔snippet grid, datasets and the synthetic benchmark."""
