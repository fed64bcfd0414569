"""Reading asv's results and reporting them: the summary report, the spread, the offline dashboard."""
