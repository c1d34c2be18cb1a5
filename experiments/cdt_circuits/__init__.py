"""Circuit discovery against ground truth (P1's circuit half): CD-T beside path patching, EAP, EAP-IG, ACDC and
activation patching on compiled tracr programs, trained toy models and real models (`README.md` here)."""
