"""numpyapp: a Flower App in numpy, written as Flower's quickstart examples are."""
