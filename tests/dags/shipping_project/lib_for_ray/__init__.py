VALUE = "from the shipped working_dir"
