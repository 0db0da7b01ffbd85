"""Everything the user reads: JSON documents, tables and trees from one field list per
object, the words for policy reasons, one event per line, stderr and syslog prefixes,
text that other users control made safe to print."""
