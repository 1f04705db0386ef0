"""What a run shows and writes: the header (``header``), live progress (``progress``), JUnit
properties (``junit``), the terminal summary (``summary``), the GitHub step summary
(``github``), the chart (``chart``), and everything written at the end (``finish``)."""
