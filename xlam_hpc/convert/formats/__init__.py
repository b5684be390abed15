"""One module per source format; registered in xlam_hpc.convert.CONVERTERS."""
