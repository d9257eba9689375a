"""RAT model, region attention, focal region loss, patch dataset and trainer."""
