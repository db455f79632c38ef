"""Getting models for the embedded engine: ``homellm pull``, ``homellm models --local``, ``homellm rm``.

Two sources behind one interface (:mod:`homellm.models.sources`): Ollama's registry, where catalog ids
are tags and the model is a GGUF blob named by its sha256, and Hugging Face (``hf.co/ORG/REPO:QUANT``,
Ollama's syntax, honouring ``HF_ENDPOINT``). :mod:`homellm.models.transfer` downloads resumably into a
``.partial`` file with Range requests and verifies the sha256 before the file takes its name;
:mod:`homellm.models.store` keeps the index of ``HOMELLM_HOME/models``.
"""
