"""Model-family plugins (baichuan2, chatglm3, gemma, llama2, ...): recognition, template, lora_target, fixes."""
