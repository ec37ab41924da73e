"""report.html of a finished evaluation run: `collect` gathers what it shows, `page` draws it."""
