"""Loading models and answering "where are the blocks, attention, MLP" for each family."""
