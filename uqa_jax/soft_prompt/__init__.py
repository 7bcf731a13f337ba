"""The Stage 2 model: frozen encoder -> adapter -> soft tokens spliced into the LLM (`model`,
`splice`), its training program and optimizer groups (`program`, `optimizer`), the title-fit start
(`title_init`), and its export for Stage 3 (`export`)."""
