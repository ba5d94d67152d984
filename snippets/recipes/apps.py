from snippets.project import apps


class RecipesConfig(apps.SnippetsAppConfig):
    name = "snippets.recipes"
    label = "recipes"
