"""Safety: prompt screening (lexicon over normalised text) and image screening (one image classifier for
a clip's sampled frames and for single pictures sent in). Plain values in and out; nothing here touches
the database."""
