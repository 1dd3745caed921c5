"""Reading the warehouse: the query's rows as chunks, and the column contract their names must follow."""
