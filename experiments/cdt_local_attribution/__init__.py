"""Paper P1, local half: CD-T word and phrase attributions on fine-tuned MiniLM classifiers beside SHAP, LIME,
integrated gradients and occlusion, judged by deletion and insertion faithfulness."""
