"""All SQL lives here: intent-named async functions that take an AsyncSession and return models."""
