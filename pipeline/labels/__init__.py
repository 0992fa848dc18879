"""Tools on label arrays, below the store: corrections and the point-pair rule (`corrections`), assisted selection (`selection`), optional Segment Anything (`sam_select`)."""
