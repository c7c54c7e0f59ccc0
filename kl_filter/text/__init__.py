"""Caption-side checks shared by filters and statistics: language ID, DataComp's caption filter."""
