"""IEC 60870-5-104 side: the outstation on c104, its pure point translation, a codec and a test master."""
