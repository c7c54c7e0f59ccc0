"""From a UID file to results: resharding and DataComp's own train/evaluate scripts, run unedited."""
