"""What the studio (and the CLI's studio-like commands) call: one service per tab (`depth_service` + `depth_models`, `curation_service` + `curation/`, `training_service`) and their parts."""
