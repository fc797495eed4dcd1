"""Safety: prompt screening (lexicon over normalised text) and output screening (an image classifier
over sampled frames). Plain values in and out; nothing here touches the database."""
