"""Study templates that ``tunefleet init`` writes."""
