"""Text and token data for calibration, healing and evaluation."""
