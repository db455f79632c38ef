module homellm.local/synthetic_backend

go 1.19
