from tokenizer.cli import main

main()
